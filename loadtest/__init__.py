"""Load testing: locust file, benchmark runner and plots."""
