"""Networks of LaMEGAN and CycleGAN, their losses, and the VGG19 weights the perceptual loss needs."""
