"""FederatedFactory as four separable parts (network, schedule, loss, sampler), the synthesis of
the class-balanced set, and the method that ties them with exact unlearning (method.py)."""
from .method import FederatedFactory

__all__ = ["FederatedFactory"]
