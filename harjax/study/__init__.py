"""Studies: suites of runs over seeds (suites.py), the runner that trains them (runner.py) and their report."""
