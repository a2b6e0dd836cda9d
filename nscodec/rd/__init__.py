"""``nscodec rd``: rate–distortion sweeps (methods × rate settings × scenes × seeds) from one command.

Each point is trained with ``ns-train``'s config machinery, exported to a real ``.nsc``, decoded in a fresh process
and evaluated on the test split; the records (``bench/results`` schema), an RD plot and a Markdown table are
written. Points run on this machine (``--backend local``) or as Ray tasks (``--backend ray``; ``pip install
nscodec[cluster]``). Modules: :mod:`~nscodec.rd.spec` (methods, settings, points), :mod:`~nscodec.rd.runner`
(running and resuming, backends, outputs), :mod:`~nscodec.rd.worker` (the per-step processes),
:mod:`~nscodec.rd.plot`, :mod:`~nscodec.rd.results` (record schema helpers shared with ``bench/``),
:mod:`~nscodec.rd.cli` (the command).
"""
