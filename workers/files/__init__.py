"""Uploaded files: what may be uploaded (`kinds`), storing one (`store`), its text (`parse`)."""
