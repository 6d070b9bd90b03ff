"""`python -m bench.capacity`: router admission capacity against simulated engine replicas."""
import sys

from bench.capacity.run import main

sys.exit(main())
