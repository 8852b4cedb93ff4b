"""lakedl deep learning: loaders, models, the training worker, launchers, tracking and inference."""
