"""What each `mnist-hpo` command does, one function per command, between the CLI and the library.

The CLI parses arguments and calls one of these; they join the layers below (search, storage,
trainer, exports, dashboards) and print what the user reads. Every figure printed names its split.
"""
