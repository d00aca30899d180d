"""Gallery: the encrypted template store, 1:N matching and site threshold calibration."""
