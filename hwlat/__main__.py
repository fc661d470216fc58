from hwlat.cli import main

raise SystemExit(main())
