"""mmembed.model"""
