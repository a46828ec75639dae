"""Programs that run inside the lab, one per role. Each is started in the foreground by a backend
(``python3 -m netlab.services.<role> --config FILE``) and must not import ``harness``."""
