"""Scalar and IMU sensors ("readings" media): the shared config and the working classes.

The plugin modules (cheap to import) are :mod:`fieldstation.sensors.system`,
:mod:`~fieldstation.sensors.w1`, :mod:`~fieldstation.sensors.i2c`,
:mod:`~fieldstation.sensors.serialport` and :mod:`~fieldstation.sensors.replay_csv`; the
working classes here import numpy and their device libraries when built. Decision record 0073.
"""
