"""genome"""
