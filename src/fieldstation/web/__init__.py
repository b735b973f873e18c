"""The station's own web page (issue 18): status, recordings with spectrograms, detections,
schedule; served by the ``web`` job (:mod:`fieldstation.web.job`). See docs/web.md."""
