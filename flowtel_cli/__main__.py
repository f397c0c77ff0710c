from flowtel_cli.main import main

raise SystemExit(main())
