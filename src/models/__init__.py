"""Models shared by tasks: SAM2 and landmark backbones, named by the keys of `registry`."""
