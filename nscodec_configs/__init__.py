"""nerfstudio method registrations for nscodec (entry points ``nerfstudio.method_configs``)."""
