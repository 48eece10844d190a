from gputui.worker.main import main

raise SystemExit(main())
