"""UTD-MHAD (Chen, Jafari, Kehtarnavaz, ICIP 2015) as a recordings manifest: 27 actions, RGB + one inertial unit."""
