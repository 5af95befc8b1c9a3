"""lensinfer.data"""
