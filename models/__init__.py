"""SV3D as MindSpore Cells (VideoUNet, VAE encoder/decoder, OpenCLIP image tower) and official-checkpoint loading.

Submodules import MindSpore; `models.keys`, `models.components` (until a Cell is built) and
`models.random_checkpoint` do not.
"""
