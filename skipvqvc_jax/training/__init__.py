"""The training loop and everything it alone uses: the input pipeline, a run's data, sharding, the trainers' table, the tasks, resume and cadence."""
