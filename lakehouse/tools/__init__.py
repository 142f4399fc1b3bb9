"""Tools around the pipeline that are not part of it: the synthetic source generator, the local GCS emulator."""
