"""lensinfer.simulate"""
