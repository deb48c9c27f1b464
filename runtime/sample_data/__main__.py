from . import write_sample

print(write_sample())
