"""`python -m gazevlm predict|export ...`: the `gazevlm` console command (gazevlm.cli)."""

from gazevlm.cli import main

raise SystemExit(main())
