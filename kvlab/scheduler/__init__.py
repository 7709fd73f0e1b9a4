"""kvlab.scheduler"""
