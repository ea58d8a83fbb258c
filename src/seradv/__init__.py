"""seradv: adversarial robustness of speech emotion recognition.

Data flows one way: corpus table -> segments -> features -> model -> attacks -> results -> report.
"""

__version__ = "0.1.0"
