from django.db import models


class Note(models.Model):
    """A row the tests' workflows and views write, to see what committed."""

    text = models.CharField(max_length=200)
