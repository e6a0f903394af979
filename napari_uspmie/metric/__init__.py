"""LaSSIM and what it is built from: OpenCV-exact pyramids, SSIM, the MONAI metric and its Ignite handler.

The bottom layer: it imports nothing else from the package, and torch (MONAI and Ignite for the
metric and the handler) only.
"""
