"""Everything that talks to AWS: SageMaker training jobs, tuning, deployment, and the in-job entry shim."""
