"""SV3D runtime: exported graphs + numpy sampling. Importing it needs only numpy; each backend imports its engine
lazily in its own module."""
