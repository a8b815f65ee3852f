from dovecote.cli import main

raise SystemExit(main())
