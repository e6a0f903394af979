"""LaSSIM and what it is built from: OpenCV-exact pyramids, SSIM, the MONAI metric (torch only).

The bottom layer: it imports nothing else from the package.
"""
