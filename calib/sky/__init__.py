"""Sky and site helpers shared by the pointing and atmosphere modules."""
