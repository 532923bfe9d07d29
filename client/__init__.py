"""What a trainer or notebook imports.  Never imports workers/ or service/, never needs Ray."""
from actlake.client.dataset import ActivationDataset, open_dataset

__all__ = ["ActivationDataset", "open_dataset"]
