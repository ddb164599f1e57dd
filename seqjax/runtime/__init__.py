"""Where a run executes: the device mesh, workdir files, console and metric writers,
pictures, the compilation cache and step rates. Used by every layer above it."""
