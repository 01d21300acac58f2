"""Raw sources, the canonical dataset, content encoders and the training loader."""
