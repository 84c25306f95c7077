"""Batch work: planning (plan.py, pure), running one job (jobs.py), the manifest (manifest.py),
executors that run jobs (executor.py) and the driver that ties them together (driver.py)."""
