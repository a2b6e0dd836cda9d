"""What users run besides the ``nscodec`` command line (:mod:`nscodec.cli`, which dispatches to these):
``ns-export compressed`` (:mod:`.export`), evaluation of a file (:mod:`.evaluate`), videos (:mod:`.video`) and the
end-to-end demo (:mod:`.demo`)."""
