from zai_proxy.cli import main

raise SystemExit(main())
