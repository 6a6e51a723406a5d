"""Synthetic bone-marrow cohort: patients, rendered cells, smear slides and the dataset's file formats."""
