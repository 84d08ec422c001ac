"""Click settings shared by the tool commands (the same as the `pipeline` group's)."""

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
