"""The submit side (login node, no torch): the command-line modes that submit, their value checks,
cluster profiles, grids and sweeps, the code snapshot, the plain sbatch template, preflight checks
and the evaluation chained after training."""
