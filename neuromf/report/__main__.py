from neuromf.report.build import main

raise SystemExit(main())
