"""Inference: SageMaker handlers (inference.py), a local endpoint and a predict client."""
