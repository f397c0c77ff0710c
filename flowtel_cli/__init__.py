"""The flowtel command line: a thin layer of docopt over the `flowtel` library."""
