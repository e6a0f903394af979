"""The enhancer: checkpoint loading, intensity mapping, tiled/slice-wise inference, fast CPU layers."""
