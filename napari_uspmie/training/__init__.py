"""Unpaired training: the CycleGAN/LaMEGAN trainer, its data, transforms, image pool and handlers."""
