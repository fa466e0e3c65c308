"""mmembed.train"""
