"""lensinfer.models"""
