"""kvlab.server"""
