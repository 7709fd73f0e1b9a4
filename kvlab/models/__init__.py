"""kvlab.models"""
