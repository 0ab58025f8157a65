"""Models and training: architectures, the training recipe for one model, many models
trained together as one ensemble, and the datamodels fitted to subset models."""
