"""Question/answer pairs written from an inbox's own emails, grounded in the emails they cite."""
