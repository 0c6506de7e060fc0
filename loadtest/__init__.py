"""twinproxy lab: bench runner (loadtest.bench), load generators, contender configs, report."""
